# Record body layouts of the broker's persistent state (edge/store/state.py
# writes them, replay.py reads them back), and their one codec. The records
# go through edge/store/log.py, which adds the seq and the framing.
#
# Each kind names one body layout: a changed layout takes a new
# kind, and the old kind's reader stays for records already on flash
# (mosquitto's persist_read_v*, without a version byte in every record).
# Fields: v varint (record.put_varint), B one byte, S varint length + UTF-8,
# b varint length + bytes, s UTF-8 to the end of the body, r bytes to the end.
#
#   16 SESSION  vBvs   sid, flags (1: clean), expiry in s (0xFFFFFFFF never), client id
#   17 SUB      vBs    sid, options (QoS in bits 0-1), filter
#   18 MSG      BSr    flags (QoS bits 0-1, RETAIN bit 2), topic, payload
#   19 QUEUED   vvB    sid, @msg, flags (delivery QoS | RETAIN << 2)
#                      (QoS 1: the delivery's one record, in flight or not)
#   20 INFLIGHT vvvvB  sid, pid, @msg, @prev, flags   (a PUBLISH sent: QoS 2,
#                      or QoS 1 sent at once of a message already stored)
#   21 RELEASED vvv    sid, pid, @prev                (PUBREC came, PUBREL sent)
#   22 RXQOS2   vv     sid, pid                       (PUBREC sent, PUBREL awaited)
#   23 RETAINED v      @msg                           (the topic is the message's)
#   24 OUTBOX          edge/store/outbox.py, on a log of its own
#   25 SUB5     vvs    as SUB, for options over a byte: 5.0 options with a
#                      shared flag and a Subscription Identifier (v5subs.py)
#   26 MSG5     BSSbr  as MSG, from a 5.0 publisher: flags, topic, sender
#                      (its client id, No Local), properties (the PUBLISH
#                      property block; Message Expiry what was left), payload
#                      (edge/store/msg5.py)
#   27 QMSG     vBBSr  sid, delivery flags, message flags, topic, payload: a
#                      QoS 1 delivery (as QUEUED) and its message (as MSG) in
#                      one record, written when the message is not stored yet
#   28 DONE     v      @qmsg: that delivery ended, other references to the
#                      message remain (it goes with the last of them); @smsg too
#   29 SMSG     vvBBSr sid, pid, delivery flags, message flags, topic, payload:
#                      a QMSG sent at once with pid (its subscriber online,
#                      nothing queued before it), so a restart resends it with
#                      that pid and DUP 1 [MQTT-4.4.0-1]
#   30 FMSG     vBBSr  as QMSG, queued on flash for an away session: the log's
#                      owned kind, alive until the session's cursor passes it
#                      (record.py), read back in batches (fqueue.py)
#
# sid: a small number naming the session in its other records, kept when
# its SESSION record is rewritten. @x: a back reference, own seq - x's seq
# (small; compaction keeps seqs); @prev 0 is "none". A message is stored
# once, however many deliveries (and the retained store) refer to it; its id
# is its record's seq. Deliveries of one session replay in log order, which
# is queue order; the send order of what is in flight (so the next pid and
# the DUP resend order, session.py) is the seq of its INFLIGHT record, which
# a RELEASED record carries on in @prev (its own seq when @prev is 0).
# MSG holds no 5.0 properties (3.1.1 has none): a 5.0 message is MSG5.
from edge.store.record import get_varint, put_varint

FMSG = 30  # the Log's owned kind (edge/runtime/persist.py, fqueue.py)

# kind -> fields, as in the table above. Records on flash outlive firmware:
# never change an entry, add a kind (tests/core/test_store_state.py pins it).
LAYOUTS = {
    16: "vBvs", 17: "vBs", 18: "BSr", 19: "vvB",
    20: "vvvvB", 21: "vvv", 22: "vv", 23: "v", 25: "vvs", 26: "BSSbr",
    27: "vBBSr", 28: "v", 29: "vvBBSr", 30: "vBBSr",
}


def encode(kind, vals):
    """The body of a record of kind (LAYOUTS) holding vals."""
    fmt = LAYOUTS[kind]
    buf = bytearray()
    for i in range(len(fmt)):
        c = fmt[i]
        v = vals[i]
        if c == "v":
            put_varint(buf, v)
        elif c == "B":
            buf.append(v)
        elif c == "S" or c == "b":
            if c == "S":
                v = v.encode()
            put_varint(buf, len(v))
            buf.extend(v)
        elif c == "s":
            buf.extend(v.encode())
        else:
            buf.extend(v)
    return buf


def decode(kind, body):
    """The values of a record body (bytes); ValueError if it does not parse
    as kind's layout (a good CRC over a body that isn't ours)."""
    out = []
    i = 0
    end = len(body)
    for c in LAYOUTS[kind]:
        if c == "v" or c == "S" or c == "b":
            n, i = get_varint(body, i, end)
            if n < 0 or (c != "v" and i + n > end):
                raise ValueError("field")
            if c == "S":
                out.append(body[i:i + n].decode())
                i += n
            elif c == "b":
                out.append(bytes(body[i:i + n]))
                i += n
            else:
                out.append(n)
        elif c == "B":
            if i >= end:
                raise ValueError("field")
            out.append(body[i])
            i += 1
        else:
            out.append(body[i:].decode() if c == "s" else body[i:])
            i = end
    if i != end:
        raise ValueError("trailing bytes")
    return out
