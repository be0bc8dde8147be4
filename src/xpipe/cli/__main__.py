from xpipe.cli.main import main

main()
