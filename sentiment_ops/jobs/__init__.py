"""Fine-tuning jobs: ``sentops train`` and ``sentops retrain`` as one recipe.

    steps.py    the steps a job composes (evaluate, plots, log the model and its metrics,
                the drift reference), each with its collaborators passed in
    fit.py      the Hugging Face ``Trainer`` mechanics: ``FitOptions``, length buckets, bf16
    recipe.py   ``FineTunePlan`` and ``run_plan``: tracked run → fine-tune → evaluate →
                log model → model metrics → reference → register
    train.py    ``train``: a base model on a corpus (its plan), then promote on request
    retrain.py  ``retrain``: production's weights on feedback labels + replay (its plan),
                production scored first, the gate, then promote through it

Modules are imported on demand (torch and transformers load with ``fit``)."""
