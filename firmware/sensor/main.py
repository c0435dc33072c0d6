# On a board: copy mqtt.py, sensor.py, this main.py and a config.json
# (see config.json here) to its filesystem; it runs at boot.
import sensor

sensor.main(["config.json"])
