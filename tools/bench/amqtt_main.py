"""Run amqtt's broker for the benchmark: `python -m tools.bench.amqtt_main PORT`.

The `amqtt` script (amqtt 0.12) takes only `-c config.yaml` and `-d`, and logs
every connection at INFO through logging.basicConfig. This runs the same
`amqtt.broker.Broker` with its default configuration except: one TCP listener
on 127.0.0.1:PORT, no connection limit, anonymous access, $SYS every 10 s (as
mosquitto and edgebroker), no event/packet logger plugins, and log level
WARNING, as edgebroker runs with --log-level warning. SIGTERM shuts it down.
"""
import asyncio
import logging
import signal
import sys


def config(port):
    return {
        "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d" % port,
                                  "max_connections": 0}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 10},
        },
    }


async def serve(port):
    from amqtt.broker import Broker

    broker = Broker(config(port))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
