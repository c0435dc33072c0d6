# Hypothesis strategies shared by the decoder fuzz tests: random bytes, and
# mutations of valid messages (the golden vectors of tests/core), which reach
# deeper into a decoder than noise does. A run's size is set by
# EDGE_FUZZ_EXAMPLES (default 200 per test; the long run in docs/fuzzing.md
# "Fuzzing" sets 5000).
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from edge.mqtt.codec import encode_varint
from tools.fuzz import mutate

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "200"))

# No example database: CI starts from a fresh clone, and a failure prints
# the example that reproduces it (@reproduce_failure).
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Five times as many for the cheap decoders: a bounds check removed from the
# CoAP option reader was found 1 run in 3 at 200, 3 in 4 at 1000 (the
# every-prefix test in test_decoders.py finds it every time)
fuzz_more = settings(fuzz, max_examples=5 * EXAMPLES)


@st.composite
def mutated(draw, seeds):
    """One of seeds, changed by a few random edits (tools/fuzz.py mutate:
    bytes flipped, set to edge values, inserted, deleted, a range
    duplicated, or the tail cut), hypothesis drawing every choice."""
    return mutate(draw(st.sampled_from(seeds)), lambda a, b: draw(st.integers(a, b)))


@st.composite
def reframed(draw, packets):
    """An MQTT packet whose body is edited and whose remaining length is
    then set to the body's new length: the framing holds, so the edit
    reaches the field and property readers instead of stopping at the
    length check."""
    pkt = draw(st.sampled_from(packets))
    i = 1
    while pkt[i] & 0x80:
        i += 1
    body = mutate(pkt[i + 1:], lambda a, b: draw(st.integers(a, b)))
    return pkt[:1] + encode_varint(len(body)) + body


@st.composite
def truncated(draw, seeds):
    """A seed cut short anywhere: the reader must see that a length or an
    extended header runs past the end."""
    data = draw(st.sampled_from(seeds))
    return data[:draw(st.integers(0, len(data)))]


def inputs(seeds, max_noise=256):
    """Random bytes, a seed cut short, or a mutated seed."""
    return st.one_of(st.binary(max_size=max_noise), truncated(seeds), mutated(seeds))


def chunks(data, cuts):
    """data split at the given offsets (sorted, in range): a stream read in
    pieces, as a socket delivers it."""
    out = []
    last = 0
    for c in sorted(set(x % (len(data) + 1) for x in cuts)):
        out.append(data[last:c])
        last = c
    out.append(data[last:])
    return [c for c in out if c]
