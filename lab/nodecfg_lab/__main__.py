from nodecfg_lab.cli import run

run()
