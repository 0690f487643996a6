"""``python -m rolypoly.cli``: the same command as ``rolypoly`` (torchrun starts training this way).

    torchrun --nproc_per_node 4 -m rolypoly.cli pretrain timing --agent seq2seq
"""
import sys

from rolypoly.cli import main

sys.exit(main())
