"""A tenant's template: the stream settings that an observation for an unknown stream creates it with."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from .. import limits
from ..deps import HubDep, Tenant
from ..patching import Template
from ..schemas import StreamCreate

router = APIRouter(prefix="/v1/template", tags=["streams"])


@router.put("", response_model=StreamCreate)
async def put_template(body: StreamCreate, hub: HubDep, tenant: Tenant) -> StreamCreate:
    """Set the tenant's template (a stream's PUT body, labels included): from now on an observation for an
    unknown stream creates it with these settings, and a bulk create (POST /v1/streams) merges each item over
    it. Durable; streams that exist are not changed."""
    template = Template.from_spec(body)
    limits.check_model(template.config, hub.settings)  # the streams it creates must be within the limits
    await hub.set_template(tenant, template)
    return StreamCreate.model_validate_json(template.body)


@router.get("", response_model=StreamCreate, responses={404: {"description": "No template: unknown streams are 404"}})
async def get_template(hub: HubDep, tenant: Tenant) -> Response:
    """The tenant's template, every default filled in."""
    template = await hub.template(tenant)
    if template is None:
        raise HTTPException(404, "this tenant has no template: observations for unknown streams are refused (404)")
    return Response(StreamCreate.model_validate_json(template.body).model_dump_json(), media_type="application/json")


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_template(hub: HubDep, tenant: Tenant) -> None:
    """Remove the template: observations for unknown streams are refused again (404)."""
    await hub.set_template(tenant, None)
