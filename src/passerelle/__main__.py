from passerelle.connector.cli.main import main

main()
