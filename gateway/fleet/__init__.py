# `edgebroker fleet`: a simulated sensor fleet against a broker, through a
# chaos proxy, with a delivery report (docs/fleet.md). CPython only; imports
# edge/ (its MQTT codec), never the reverse.
