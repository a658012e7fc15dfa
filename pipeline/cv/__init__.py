"""Cross-validation: fold assignment saved once per competition (folds.py) and the K-fold loop
with OOF sum/count and resume (loop.py)."""
