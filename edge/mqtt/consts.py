# MQTT wire numbers (3.1.1 and 5.0): the public vocabulary for tests, tools
# and the gateway. The core modules don't import this module: each keeps
# private `_NAME = const(n)` copies of the numbers it uses, which MicroPython
# folds into the bytecode, while every public name (here, and again in each
# importer's globals) costs heap on a board. tests/core/test_consts.py checks
# that every private copy equals its public name here.
from edge.compat import const

# Control packet types, fixed header bits 7-4 (MQTT 3.1.1 §2.2.1, 5.0 §2.1.2)
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)
AUTH = const(15)

# 3.1.1 CONNACK return codes (§3.2.2.3)
CONNACK_ACCEPTED = const(0)
CONNACK_BAD_PROTOCOL = const(1)
CONNACK_ID_REJECTED = const(2)
CONNACK_SERVER_UNAVAILABLE = const(3)
CONNACK_BAD_CREDENTIALS = const(4)
CONNACK_NOT_AUTHORIZED = const(5)

# SUBACK failure in 3.1.1 (§3.9.3)
SUBACK_FAILURE = const(0x80)

# MQTT 5.0 reason codes (§2.4) that the core raises errors with; a 3.1.1
# connection maps them to what 3.1.1 can say (close the socket). Each public
# name costs heap on a board (an interned name and a dict slot), so the rest
# of 5.0's table lives with the lazily imported 5.0 support, not here.
RC_UNSPECIFIED = const(0x80)
RC_MALFORMED = const(0x81)
RC_PROTOCOL_ERROR = const(0x82)
RC_TOPIC_FILTER_INVALID = const(0x8F)
RC_TOPIC_NAME_INVALID = const(0x90)
RC_PACKET_TOO_LARGE = const(0x95)

# The rest of 5.0's reason codes (§2.4) and the property ids (§2.2.2.2) the
# broker's 5.0 support acts on. Only tests and tools import this module; the
# core (edge/mqtt/v5.py, shared.py) keeps private copies that fold away.
RC_NO_SUBSCRIPTION = const(0x11)
RC_NO_MATCHING_SUBSCRIBERS = const(0x10)
RC_DISCONNECT_WITH_WILL = const(0x04)
RC_BAD_AUTH_METHOD = const(0x8C)
RC_KEEPALIVE_TIMEOUT = const(0x8D)
RC_SESSION_TAKEN_OVER = const(0x8E)
RC_PID_NOT_FOUND = const(0x92)
RC_RECEIVE_MAX_EXCEEDED = const(0x93)
RC_TOPIC_ALIAS_INVALID = const(0x94)
RC_QUOTA_EXCEEDED = const(0x97)
RC_PAYLOAD_FORMAT_INVALID = const(0x99)
RC_SHARED_NOT_SUPPORTED = const(0x9E)
RC_SUB_IDS_NOT_SUPPORTED = const(0xA1)

P_FORMAT = const(0x01)
P_EXPIRY = const(0x02)
P_CONTENT_TYPE = const(0x03)
P_RESPONSE_TOPIC = const(0x08)
P_CORRELATION = const(0x09)
P_SUB_ID = const(0x0B)
P_SESSION_EXPIRY = const(0x11)
P_ASSIGNED_ID = const(0x12)
P_SERVER_KEEPALIVE = const(0x13)
P_AUTH_METHOD = const(0x15)
P_AUTH_DATA = const(0x16)
P_PROBLEM_INFO = const(0x17)
P_WILL_DELAY = const(0x18)
P_REASON_STRING = const(0x1F)
P_RECEIVE_MAX = const(0x21)
P_ALIAS_MAX = const(0x22)
P_ALIAS = const(0x23)
P_USER = const(0x26)
P_MAX_PACKET = const(0x27)
P_SUB_IDS_AVAILABLE = const(0x29)
P_SHARED_AVAILABLE = const(0x2A)
