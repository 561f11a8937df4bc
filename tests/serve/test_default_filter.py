"""The service's default video mode: serve.rwr.filter applies unless the request names a filter."""

from __future__ import annotations

from serve.scoring import effective_filter, parse_options
from serve.settings import load_settings


def test_the_configured_filter_applies_only_when_the_request_names_none() -> None:
    settings = load_settings(overrides={"rwr": {"filter": "kalman", "filter_params": {"q": 0.1, "r": 1.0}}})
    assert effective_filter(parse_options({}), settings, 30.0) == ("kalman", {"q": 0.1, "r": 1.0})
    assert effective_filter(parse_options({"filter": "none"}), settings, 30.0) == ("none", {})
    name, params = effective_filter(parse_options({"filter": "one_euro"}), settings, 25.0)
    assert (name, params["freq"]) == ("one_euro", 25.0)  # the video's frame rate
    assert effective_filter(parse_options({}), load_settings(), 30.0) == ("none", {})  # the code default
