"""Which digits are hardest? Per-class recall of 5-fold cross-validated logistic regression.

The default ``hard-classes = "1,3,8,9"`` (the classes a hard-but-clean client holds) are the four
lowest-recall classes printed here.

    python benchmarks/hard_classes.py
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from fedlr.data.datasets import load_digits_arrays


def main() -> None:
    x, y = load_digits_arrays()
    predicted = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5)
    recall = {c: float(np.mean(predicted[y == c] == c)) for c in range(10)}
    for c, r in sorted(recall.items(), key=lambda item: item[1]):
        print(f"class {c}: recall {100 * r:.1f}%")


if __name__ == "__main__":
    main()
