"""python -m fastgp.info: prints fastgp.info() as JSON."""

from . import main

main()
