"""Fine-tuning dense and ColBERT models (`mbret train`, `mbret mine`, `mbret score`), one module per part:

- `config`: one run's settings (`TrainConfig`): a preset, then a YAML file, then command-line flags;
- `presets`: the ModernBERT paper's retrieval recipes, one name each, with their sources;
- `data`: training data in the four shapes IR datasets come in, made into the one table the trainers read;
- `losses`: the losses `--loss` names, per mode, on sentence-transformers' loss classes;
- `mining`: hard negatives from a dense model's ranking of the corpus;
- `negatives`: `mbret mine` as one call (`mine_dataset`): a dataset's pairs mined into a training file;
- `scoring`: teacher scores (a cross-encoder, or a bi-encoder standing in for one) for distillation;
- `trainer`: the model, data, loss and sentence-transformers' trainer wired together, checkpointed and resumable.

The package imports none of them, so reading a config does not load torch: import the module you need.
"""
