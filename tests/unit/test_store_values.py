"""The store's value types, its JSON codec and opening stores by URL."""

from __future__ import annotations

import math

import pytest

from runwatch.store import codec, open_store
from runwatch.store.base import (
    Matcher,
    MatchOp,
    NotificationRecord,
    Silence,
    StoreError,
    redact_url,
)
from runwatch.store.memory import MemoryStore

T0 = 1_700_000_000.0


# --- matchers and silences ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("team=research", Matcher(name="team", op=MatchOp.EQUAL, value="research")),
        (" team != research ", Matcher(name="team", op=MatchOp.NOT_EQUAL, value="research")),
        ("rule=~loss_.*", Matcher(name="rule", op=MatchOp.REGEX, value="loss_.*")),
        ('run!~"a=b.*"', Matcher(name="run", op=MatchOp.NOT_REGEX, value="a=b.*")),
        ("run.path=e/p/r", Matcher(name="run.path", op=MatchOp.EQUAL, value="e/p/r")),
        ("gpu=", Matcher(name="gpu", op=MatchOp.EQUAL, value="")),
    ],
)
def test_matcher_parse(text: str, expected: Matcher) -> None:
    assert Matcher.parse(text) == expected
    assert Matcher.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "team", "=x", "team~x", "1a=b"])
def test_matcher_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a matcher"):
        Matcher.parse(text)


def test_matcher_refuses_bad_regex_and_operator() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        Matcher(name="a", op=MatchOp.REGEX, value="(")
    with pytest.raises(ValueError, match="unknown operator"):
        Matcher(name="a", op="==", value="b")  # type: ignore[arg-type]
    assert Matcher(name="a", op="=~", value="b").op is MatchOp.REGEX  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("matcher", "labels", "hit"),
    [
        ("team=research", {"team": "research"}, True),
        ("team=research", {"team": "research-2"}, False),
        ("team!=research", {}, True),
        ("team=", {}, True),  # a missing label is the empty string
        ("rule=~loss", {"rule": "loss_nan"}, False),  # anchored
        ("rule=~loss.*", {"rule": "loss_nan"}, True),
        ("rule!~loss.*", {"rule": "stalled"}, True),
        ("rule!~loss.*", {"rule": "loss_nan"}, False),
    ],
)
def test_matcher_matches(matcher: str, labels: dict[str, str], hit: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is hit


def test_silence_states_and_matching() -> None:
    silence = Silence(
        id="abc",
        matchers=[Matcher.parse("team=research"), Matcher.parse("severity=~warning|critical")],
        starts_at=T0,
        ends_at=T0 + 10,
        created_at=T0 - 5,
    )
    assert isinstance(silence.matchers, tuple)
    assert silence.pending(T0 - 1) and not silence.active(T0 - 1)
    assert silence.active(T0) and silence.active(T0 + 9.9)
    assert silence.expired(T0 + 10) and not silence.active(T0 + 10)
    assert silence.matches({"team": "research", "severity": "critical"})
    assert not silence.matches({"team": "research", "severity": "info"})


def test_silence_that_ends_when_it_starts_is_a_valid_expired_silence() -> None:
    silence = Silence(
        id="a", matchers=[Matcher.parse("a=b")], starts_at=T0, ends_at=T0, created_at=T0
    )
    assert silence.expired(T0) and not silence.active(T0)
    with pytest.raises(ValueError, match="cannot end before"):
        Silence(
            id="a", matchers=[Matcher.parse("a=b")], starts_at=T0, ends_at=T0 - 1, created_at=T0
        )


def test_notification_record_normalises_sets() -> None:
    rec = NotificationRecord(
        group_key="g",
        receiver="r",
        firing=["b", "a"],  # type: ignore[arg-type]
        sent_at=T0,
        expires_at=T0 + 1,
    )
    assert rec.firing == frozenset({"a", "b"}) and rec.resolved == frozenset()
    assert rec.key == ("g", "r")
    assert not rec.expired(T0) and rec.expired(T0 + 1)


# --- JSON codec ---------------------------------------------------------------------------


def test_json_codec_is_strict_json_with_non_finite_floats() -> None:
    value = {"a": [math.nan, math.inf, -math.inf, 1.5], "b": {"c": (1, None)}}
    text = codec.encode_json(value)
    assert "NaN" not in text and "Infinity" not in text
    back = codec.decode_json(text)
    assert math.isnan(back["a"][0]) and back["a"][1:] == [math.inf, -math.inf, 1.5]
    assert back["b"] == {"c": [1, None]}
    assert codec.decode_json(codec.encode_json({"$float": "nan", "x": 1})) == {
        "$float": "nan",
        "x": 1,
    }


def test_json_codec_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(codec.CodecError, match="not JSON-serialisable"):
        codec.encode_json({"x": object()})
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(codec.CodecError):
        codec.encode_json(cycle)
    with pytest.raises(codec.CodecError, match="unreadable"):
        codec.decode_json("{not json")


def _bits(values: list[float]) -> list[str]:
    return [v.hex() if not math.isnan(v) else "nan" for v in values]


def test_check_memory_packs_float_windows_and_reads_them_back_bit_for_bit() -> None:
    window = [1_796_221_447.918014 + i / 100 for i in range(50)]
    odd = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2, 1e308, -1.5]
    memory = ["tag", window, {"odd": tuple(odd), "short": [1.5, 2.5]}, [1.0] * 7 + [1]]
    text = codec.encode_memory(memory)
    assert text.count('{"$f64":') == 2 and len(text) < len(codec.encode_json(memory))
    back = codec.decode_memory(text)
    assert back[0] == "tag" and back[1] == window
    assert _bits(back[2]["odd"]) == _bits(odd) and math.copysign(1, back[2]["odd"][3]) == -1
    assert back[2]["short"] == [1.5, 2.5]  # short lists stay readable JSON
    assert back[3] == [1.0] * 7 + [1] and type(back[3][-1]) is int  # ints are not floats


@pytest.mark.parametrize("tag", ["550b5d91b04e", 'a "quoted" tag\\ é \u2028 \n'])
def test_check_memory_of_the_engine_s_shape_is_written_as_the_encoder_writes_it(
        tag: str) -> None:
    window = [1.5 * i for i in range(40)]
    text = codec.encode_memory([tag, window])
    assert text == codec.encode_json([tag, codec._pack_floats(window)])
    assert codec.decode_memory(text) == [tag, window]


@pytest.mark.parametrize("memory", [None, 3.5, [], ["t", None], ["t", [1, 2, 3] * 5],
                                    {"$f64": "not packed"}, {"$f64": "AAAA"}])
def test_check_memory_that_is_not_a_float_window_is_plain_json(memory: object) -> None:
    text = codec.encode_memory(memory)
    assert text == codec.encode_json(memory)
    assert codec.decode_memory(text) == memory


def test_check_memory_written_as_plain_json_still_reads() -> None:
    window = [1.5 + i for i in range(20)] + [math.nan]
    back = codec.decode_memory(codec.encode_json(["tag", window]))
    assert back[1][:20] == window[:20] and math.isnan(back[1][20])


def test_check_memory_refuses_what_json_cannot_hold() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    for memory in (cycle, ["t", [1.0] * 8, object()]):
        with pytest.raises(codec.CodecError, match="not JSON-serialisable"):
            codec.encode_memory(memory)
    with pytest.raises(codec.CodecError, match="unreadable"):
        codec.decode_memory("[1,")


# --- errors and URLs ----------------------------------------------------------------------


def test_store_error_is_one_line() -> None:
    error = StoreError("cannot open:\n  file is\tnot a database", store="/x.db", temporary=False)
    assert str(error) == "store /x.db: cannot open: file is not a database"
    assert error.temporary is False and error.store == "/x.db"


def test_open_memory_store() -> None:
    opened = open_store("memory://")
    assert isinstance(opened, MemoryStore)
    opened.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://user:hunter2@db/runwatch?schema=a-b", "schema must be a plain SQL"),
        ("redis://localhost", "unknown store scheme 'redis'"),
        ("/var/lib/runwatch.db", "not a store URL"),
        ("sqlite://", "expected sqlite:///"),
        ("sqlite://host/path.db", "expected sqlite:///"),
        ("sqlite:///x.db?journal=off", "unknown option 'journal'"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///x.db?busy_timeout=-1", "busy_timeout"),
        ("memory://somewhere", "takes no path"),
    ],
)
def test_open_store_refuses(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        open_store(url)
    assert caught.value.temporary is False
    assert "hunter2" not in str(caught.value)
    assert redact_url(url) in str(caught.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
