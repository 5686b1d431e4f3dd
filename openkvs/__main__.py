from openkvs.cli import main

main(prog_name="openkvs")
