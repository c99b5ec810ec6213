"""Generator-quality figures, cheap enough to compare recipes without full evaluations.

The real-data reference classifier (the ConvNet of DC/DSA/DM, trained once per dataset and cached) lives in the
host, `ddbench/classifier.py`, because the selectors' `classifier` feature space uses it too. Two figures of a
generated set come from it (`ReferenceClassifier.figures`):

- `class_accuracy`: % of generated images the real-data classifier assigns to the class they were generated
  for (a conditional generator that has not learned its classes scores near 100/K);
- `fd`: the Fréchet distance between the classifier's `embed` features of generated images and of the real
  test set (FID's formula, Heusel et al. 2017, in this network's feature space instead of Inception's, which
  cannot be downloaded here; comparable only between sets of equal size, so the size is recorded).

The same classifier's features are one of the embedding spaces the min-max losses can use (`embedding=classifier`).
"""
from __future__ import annotations

from ddbench.classifier import (CLASSIFIER_BATCH, CLASSIFIER_EPOCHS, CLASSIFIER_LR, SHIPPED_NAME,  # noqa: F401
                                ReferenceClassifier, frechet_distance, reference_classifier, shipped_path)
