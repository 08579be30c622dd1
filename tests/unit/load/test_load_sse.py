import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.load.sse import SSEDecoder, SSEError, SSEEvent


def decode_all(*chunks: bytes) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(d.feed(c))
    return out


def test_llama_cpp_style_stream() -> None:
    raw = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert [e.data for e in decode_all(raw)] == ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_line_endings_crlf_cr_and_split_crlf() -> None:
    assert [e.data for e in decode_all(b"data: x\r\n\r\ndata: y\r\rdata: z\n\n")] == ["x", "y", "z"]
    # CRLF split across reads is one line ending, not a blank line in between
    assert [e.data for e in decode_all(b"data: a\r", b"\ndata: b\r", b"\n\r\n")] == ["a\nb"]


def test_multiline_data_comments_fields_and_bom() -> None:
    raw = b"\xef\xbb\xbf: keep-alive\nid: 7\nretry: 10\nevent: delta\ndata:one\ndata: two\nfoo: bar\n\n"
    assert decode_all(raw) == [SSEEvent("one\ntwo", "delta")]


def test_event_without_data_is_not_dispatched_and_partial_is_pending() -> None:
    d = SSEDecoder()
    assert d.feed(b"event: ping\n\n") == []
    assert d.feed(b'data: {"cut') == [] and d.pending
    assert d.feed(b'"}\n') == [] and d.pending  # a field, but no blank line yet
    assert d.feed(b"\n") == [SSEEvent('{"cut"}')] and not d.pending


def test_old_llama_cpp_error_line_becomes_error_event() -> None:
    assert decode_all(b'error: {"code": 500}\n\n') == [SSEEvent('{"code": 500}', "error")]


def test_bad_utf8_and_endless_line_are_typed_errors() -> None:
    with pytest.raises(SSEError, match="UTF-8"):
        decode_all(b"data: \xff\xfe\n\n")
    with pytest.raises(SSEError, match="longer"):
        SSEDecoder(max_line_bytes=16).feed(b"data: " + b"x" * 64)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, last = [], 0
    for p in points:
        parts.append(data[last:p])
        last = p
    parts.append(data[last:])
    return parts


def feed_or_error(parts: list[bytes]) -> list[SSEEvent] | str:
    try:
        return decode_all(*parts)
    except SSEError:
        return "error"


garbage = st.binary(max_size=300) | st.lists(
    st.sampled_from(
        [
            b"data: ",
            b"data:",
            b"event: e",
            b"\n",
            b"\r",
            b"\r\n",
            b":",
            b"x",
            b"[DONE]",
            b"\xff",
            b"\xc3\xa9",
            b"error: ",
            b"\xef\xbb\xbf",
            b" ",
        ]
    ),
    max_size=60,
).map(b"".join)


@given(garbage, st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_never_raises_anything_but_sse_error(data: bytes, cuts: list[int]) -> None:
    feed_or_error(split_at(data, cuts))


@given(garbage, st.lists(st.integers(min_value=0), max_size=8))
def test_events_do_not_depend_on_how_bytes_are_split(data: bytes, cuts: list[int]) -> None:
    # lines are decoded whole, so even a bad byte fails the same way however it arrives
    assert feed_or_error(split_at(data, cuts)) == feed_or_error([data])


@given(
    # surrogates (category Cs) cannot be encoded to UTF-8, so no server can send them
    st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20), max_size=10)
)
def test_any_payload_round_trips(payloads: list[str]) -> None:
    raw = b"".join(b"data: " + p.encode() + b"\n\n" for p in payloads)
    assert [e.data for e in decode_all(raw)] == payloads
