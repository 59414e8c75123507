"""The ``nnunet_dsmm`` command line: parser, commands, training commands; ``main`` is the console script."""
