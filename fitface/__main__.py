from fitface.cli import main

main()
