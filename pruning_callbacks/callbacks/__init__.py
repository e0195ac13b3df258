"""The Lightning callbacks: thin hook wiring on :mod:`pruning_callbacks.engine`, state for resume in ``state_dict``.

:mod:`.base` (``MaskedTraining``), :mod:`.scheduled` (GMP, one-shot and gradual pruning), :mod:`.rounds` and
:mod:`.imp` (prune after training, in rounds: IMP, Lottery Ticket, Han et al.), :mod:`.filters` (Li et al.),
:mod:`.prune_at_init` (SynFlow, SNIP, GraSP, random), :mod:`.static`, :mod:`.sparse_training` and :mod:`.dynamic`
(static, RigL, SET), :mod:`.early_bird` and
:mod:`.monitor`; :mod:`.round_records`, :mod:`.batches` and :mod:`.plotting` are what they share.
"""
