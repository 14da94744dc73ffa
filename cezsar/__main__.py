from cezsar.cli import main

main()
