# One exception type per side (h11/wsproto style). Only the broker's dispatcher
# turns `reason` into a CONNACK / DISCONNECT / CoAP code.


class ProtocolError(Exception):
    def __init__(self, reason, msg=""):
        super().__init__(msg or "reason 0x%02x" % reason)
        self.reason = reason
        self.msg = msg


class LocalProtocolError(ProtocolError):
    """Our caller misused the API: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the spec; `reason` is the MQTT v5 reason code."""


class ConfigError(Exception):
    """A bad configuration value; the message names the key (and line)."""

    def __init__(self, key, msg, line=0):
        super().__init__(("%s (line %d): %s" % (key, line, msg)) if line else ("%s: %s" % (key, msg)))
        self.key = key
        self.line = line
