from nodecfg.cli import run

run()
