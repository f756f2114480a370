"""`whisperlite serve --archive DIR`: /v1/search over a real batch of the fixtures, the
episodes' media served only as the manifest lists them (no path traversal), and the page's
search box in a real headless Chromium: search, click a hit, the player is at the hit's time."""
from __future__ import annotations

import shutil
from urllib.parse import quote

import pytest
from conftest import FIXTURES, run_cli

from whisperlite.server.app import create_app
from whisperlite.server.config import ServerConfig

CLIPS = ["jfk.wav", "librispeech-2412-153948-0000.flac"]
FAST = ["-m", "tiny.en", "-t", "2", "-bs", "1", "-osrt"]
KEY = "archive-test-key"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    inputs = root / "in"
    inputs.mkdir()
    for name in CLIPS:
        shutil.copy(FIXTURES / name, inputs / name)
    out = root / "out"
    r = run_cli("batch", str(inputs), "-o", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    return out


def client(archive=None, api_key=None):
    from starlette.testclient import TestClient

    return TestClient(create_app(ServerConfig(archive=str(archive) if archive else None, api_key=api_key),
                                 load=False))


def test_no_archive_is_404():
    with client() as c:
        for path in ("/v1/archive", "/v1/search?q=x", "/v1/archive/media?episode=jfk.wav"):
            r = c.get(path)
            assert r.status_code == 404 and "--archive" in r.json()["error"]["message"]


def test_search_hits_with_times_and_media(archive):
    with client(archive) as c:
        assert c.get("/v1/archive").json() == {"archive": True, "episodes": 2}
        body = c.get("/v1/search", params={"q": '"fellow americans"'}).json()
        hit = body["hits"][0]
        assert hit["episode"] == "jfk.wav" and abs(hit["start"] - 0.3) < 1.0 and "fellow" in hit["text"].lower()
        assert hit["media"] == "/v1/archive/media?episode=jfk.wav"
        media = c.get(hit["media"])
        assert media.status_code == 200 and media.content == (FIXTURES / "jfk.wav").read_bytes()
        part = c.get(hit["media"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == (FIXTURES / "jfk.wav").read_bytes()[100:200]
        native = c.get("/v1/search", params={"q": "native country"}).json()["hits"][0]
        assert native["episode"] == "librispeech-2412-153948-0000.flac"
        assert c.get("/v1/search", params={"q": "zebra"}).json()["hits"] == []


def test_an_episodes_transcript_is_what_chapters_take(archive):
    with client(archive) as c:
        body = c.get("/v1/archive/transcript", params={"episode": "jfk.wav"}).json()
        segments = body["segments"]
        assert body["episode"] == "jfk.wav" and len(segments) >= 2
        assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
        assert "fellow americans" in " ".join(s["text"] for s in segments).lower()
        assert set(segments[0]) == {"start", "end", "speaker", "text"}
        for episode in ("", "JFK.WAV", "../jfk.wav", "in/jfk.wav"):
            r = c.get("/v1/archive/transcript", params={"episode": episode})
            assert r.status_code == 404 and r.json()["error"]["param"] == "episode", episode


@pytest.mark.parametrize("query,param", [("", "q"), ("   ", "q")])
def test_empty_query_is_400(archive, query, param):
    with client(archive) as c:
        r = c.get("/v1/search", params={"q": query})
        assert r.status_code == 400 and r.json()["error"]["param"] == param
        assert c.get("/v1/search", params={"q": "x", "limit": "0"}).status_code == 400
        assert c.get("/v1/search", params={"q": "x", "limit": "abc"}).status_code == 400


def test_media_only_for_manifest_episodes(archive):
    """Nothing but a done input's file is served: not the archive's own files, not paths
    around or through an episode's, not the input by its path on disk."""
    tries = ["manifest.jsonl", "index.sqlite", "../manifest.jsonl", "jfk.wav/../manifest.jsonl", "/etc/passwd",
             "../../../../etc/passwd", str(archive.parent / "in" / "jfk.wav"), "in/jfk.wav", "jfk.wav%00",
             "JFK.WAV", ".segments/jfk.json", ""]
    with client(archive) as c:
        for episode in tries:
            r = c.get(f"/v1/archive/media?episode={quote(episode, safe='')}")
            assert r.status_code == 404, (episode, r.status_code)
        assert c.get("/v1/archive/media/../../etc/passwd").status_code == 404
        assert c.get("/v1/archive/media?episode=jfk.wav").status_code == 200


def test_archive_routes_need_the_key(archive):
    with client(archive, api_key=KEY) as c:
        assert c.get("/v1/search?q=fellow").status_code == 401
        assert c.get("/v1/archive/media?episode=jfk.wav").status_code == 401
        ok = c.get("/v1/search?q=fellow", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["hits"]


def test_serve_archive_not_a_batch_folder(tmp_path):
    r = run_cli("serve", "--archive", str(tmp_path), timeout=60)
    assert r.returncode != 0 and r.stderr.startswith("error: --archive") and r.stderr.count("\n") == 1


def _search_on_the_page(driver, query: str) -> list:
    """The Search tab (once the page has found the archive), `query` submitted: the hits' buttons."""
    from selenium.webdriver.common.by import By
    from test_server_page import _until

    tab = driver.find_element(By.ID, "tab-search")
    _until(driver, lambda d: tab.is_displayed(), "the Search tab once the server says it has an archive")
    tab.click()
    box = driver.find_element(By.ID, "search-q")
    box.send_keys(query)
    box.submit()
    return _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#search-hits button"), "hits")


@pytest.mark.parametrize("api_key", [None, KEY])
def test_page_search_box_plays_the_hit(archive, tmp_path_factory, api_key):
    from selenium.webdriver.common.by import By
    from test_server_page import _chromium, _free_port, _serving, _shot, _until

    driver = _chromium(tmp_path_factory, tmp_path_factory.mktemp("downloads"))
    try:
        config = ServerConfig(port=_free_port(), archive=str(archive), api_key=api_key)
        with _serving(config, load=False) as url:
            driver.get(url)
            if api_key:
                driver.execute_script("localStorage.setItem('whisperlite.apiKey', arguments[0])", api_key)
                driver.get(url)
            hits = _search_on_the_page(driver, '"native country"')
            assert "librispeech-2412-153948-0000.flac" in hits[0].text and "native country" in hits[0].text.lower()
            hits[0].click()
            player = driver.find_element(By.ID, "search-player")
            _until(driver, lambda d: d.execute_script(
                "const p = arguments[0]; return p.readyState >= 1 && p.dataset.episode && p.currentTime > 0", player),
                "the player at the hit")
            at = driver.execute_script("return arguments[0].currentTime", player)
            api = driver.execute_script(
                "return fetch('/v1/search?q=%22native%20country%22', {headers: arguments[0] ? "
                "{Authorization: 'Bearer ' + arguments[0]} : {}}).then((r) => r.json())", api_key)
            start = api["hits"][0]["start"]
            assert start - 0.05 <= at <= start + 1.5, (at, start)  # playing may have moved it on a little
            assert driver.execute_script("return arguments[0].dataset.episode", player) == api["hits"][0]["episode"]
            # The episode's chapters and summary are offered; without an LLM the page says what is missing.
            assert driver.find_element(By.ID, "search-insights").is_displayed()
            assert "--llm" in driver.find_element(By.ID, "search-insights-note").text
            assert not driver.find_element(By.ID, "search-chapters").is_enabled()
            _shot(driver, f"search{'-key' if api_key else ''}")
    finally:
        driver.quit()


def test_page_summarizes_the_episode_a_hit_plays(archive, tmp_path_factory):
    """The Search tab's Summary: the episode's segments from /v1/archive/transcript go to
    /v1/summarize (a tiny random LLaMA: the prose is noise, the quotes are the episode's lines),
    and a quote seeks the episode's player."""
    from llama_tiny import TinyDims, write_tiny_llama
    from selenium.webdriver.common.by import By
    from test_server_page import _chromium, _free_port, _serving, _until

    from whisperlite.generation.generate import load_generator

    llm = tmp_path_factory.mktemp("llm") / "tiny.gguf"
    write_tiny_llama(llm, seed=5, dims=TinyDims(n_ctx=2048))
    driver = _chromium(tmp_path_factory, tmp_path_factory.mktemp("downloads"))
    try:
        config = ServerConfig(port=_free_port(), llm=str(llm), archive=str(archive))
        with _serving(config, load=False, llm=load_generator(str(llm))) as url:  # no Whisper model needed
            driver.get(url)
            _search_on_the_page(driver, '"fellow americans"')[0].click()
            summary = driver.find_element(By.ID, "search-summary")
            _until(driver, lambda d: summary.is_displayed() and summary.is_enabled(), "the Summary button")
            assert "jfk.wav" in driver.find_element(By.ID, "search-insights-note").text
            summary.click()
            quotes = _until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#search-quotes button[data-start]"),
                            "the summary's quotes")
            assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
            assert "fellow americans" in quotes[0].text.lower()
            driver.execute_script("document.getElementById('search-player').pause()")
            quotes[-1].click()
            start = float(quotes[-1].get_attribute("data-start"))
            _until(driver, lambda d: abs(d.execute_script(
                "return document.getElementById('search-player').currentTime") - start) < 0.3, "the player at the quote")
    finally:
        driver.quit()
