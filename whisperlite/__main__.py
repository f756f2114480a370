from whisperlite.cli.main import main

main()
