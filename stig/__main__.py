from stig.tools.cli import main

main()
