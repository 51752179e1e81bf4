"""Pages on other origins: CORS for the origins an operator lists (TBPTT_ALLOWED_ORIGINS), preflights
answered before any key is asked for; and the API's documentation pages work without internet."""

from __future__ import annotations

from tbptt.service.settings import Settings
from tests.service.factories import app_client, wait_ready

KEY = "ops-key-0123456789abcdef"
OPS = "https://ops.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def test_listed_origins_get_cors_with_preflights_and_others_none(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", api_keys=f"ops:{KEY}", allowed_origins=f"{OPS}/, https://b.example")
    with app_client(settings) as c:
        wait_ready(c)
        auth = {"Authorization": f"Bearer {KEY}"}
        assert c.put("/v1/streams/s", json={"model": {"input_size": 1}}, headers=auth).status_code == 201
        preflight = c.options("/v1/streams/s/observations", headers={"Origin": OPS, **PREFLIGHT})
        assert preflight.status_code == 200  # without the key: a browser sends none in a preflight
        assert preflight.headers["access-control-allow-origin"] == OPS
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        posted = c.post("/v1/streams/s/observations", json={"x": 1.0}, headers={"Origin": OPS, **auth})
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == OPS
        assert "Retry-After" in posted.headers["access-control-expose-headers"]
        refused = c.get("/v1/streams/s", headers={"Origin": OPS})  # CORS grants no access: the key still does
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == OPS
        other = "https://evil.example"
        assert c.options("/v1/streams/s/observations", headers={"Origin": other, **PREFLIGHT}).status_code == 400
        read = c.get("/v1/streams/s", headers={"Origin": other, **auth})
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers  # the browser hides it


def test_without_listed_origins_no_cors_is_granted(client):
    preflight = client.options("/v1/streams", headers={"Origin": OPS, **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in client.get("/v1/streams", headers={"Origin": OPS}).headers


def test_the_docs_pages_load_their_scripts_from_the_service_not_a_cdn(client):
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)
        assert html.status_code == 200 and "cdn." not in html.text and "https://" not in html.text, page
        src = next(part.split('"')[0] for part in html.text.split('src="')[1:] if script in part.split('"')[0])
        served = client.get(src)
        assert served.status_code == 200 and len(served.content) > 100_000, src
    css = client.get("/docs").text.split('href="')[1].split('"')[0]
    assert client.get(css).status_code == 200
