from ragd.cli import main

main()
