# On a board: copy coap_sensor.py, this main.py and a config.json (see
# config.json here) to its filesystem; it runs at boot.
import coap_sensor

coap_sensor.main(["config.json"])
