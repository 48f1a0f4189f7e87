from tierd.core.cli import main

main()
