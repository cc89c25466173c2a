"""What the MONAI bundles (``bundles/covid``, ``bundles/chase``) call from their configs, one module per concern.

- :mod:`.cli` -- the bundle folder and the command line: where the bundle is, overrides the config lacks, the short
  failure report of ``python -m monai.bundle run``;
- :mod:`.flags` -- the engine's arguments as the bundle's flags, in the messages that report shows;
- :mod:`.settings` -- checks of the settings a user types (numbers, switches, sizes, device);
- :mod:`.datalists` -- the datalist a run trains, validates and evaluates on (a prepared set or the phantoms);
- :mod:`.inputs` -- inference inputs (files, series, folders, prepared sets) as 2D items;
- :mod:`.writer` -- the label maps ``inferring`` writes;
- :mod:`.checkpoints` -- the trained model ``evaluating`` / ``inferring`` load, checked before use;
- :mod:`.resume` -- the training state saved every epoch, and ``--resume``.

Importing the package or any of its modules changes nothing in the process: the bundle configs install the failure
report themselves, first thing in ``initialize`` (:func:`.cli.install_failure_report`).
"""
