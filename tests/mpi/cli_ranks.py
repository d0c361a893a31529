"""Run under torchrun: ``xbp`` with other arguments per rank (what mpiexec's ``:`` does).

torchrun --nproc_per_node 2 cli_ranks.py ARGS_OF_RANK_0 -- ARGS_OF_RANK_1
"""

import os
import sys

from xbp.cli import main

words = sys.argv[1:]
split = words.index("--")
per_rank = [words[:split], words[split + 1 :]]
sys.exit(main(per_rank[int(os.environ["RANK"])]))
