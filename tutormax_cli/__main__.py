from tutormax_cli.cli import main

main()
