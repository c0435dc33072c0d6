# The chaos profiles of `edgebroker fleet` (docs/fleet.md "Chaos profiles"):
# data only, so the command line can list them without loading the proxy.
# rates are "one per N seconds per link" (0: never); udp_loss: the share of
# CoAP datagrams lost, each way (TCP shows loss as resets and holes only)
PROFILES = {
    "none": {"latency_ms": 0, "jitter_ms": 0, "reset_every_s": 0, "hole_every_s": 0,
             "hole_s": (0, 0), "flap_share": 0, "flap_up_s": 0, "flap_down_s": 0, "kill_share": 0,
             "udp_loss": 0},
    "flaky": {"latency_ms": 5, "jitter_ms": 20, "reset_every_s": 25, "hole_every_s": 60,
              "hole_s": (2, 4), "flap_share": 0.1, "flap_up_s": 5, "flap_down_s": 1, "kill_share": 0.02,
              "udp_loss": 0.05},
    "harsh": {"latency_ms": 30, "jitter_ms": 60, "reset_every_s": 8, "hole_every_s": 20,
              "hole_s": (2, 5), "flap_share": 0.25, "flap_up_s": 3, "flap_down_s": 2, "kill_share": 0.05,
              "udp_loss": 0.15},
}
