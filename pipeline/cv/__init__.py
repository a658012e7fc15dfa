"""Cross-validation: fold assignment saved once per competition (folds.py), the K-fold loop
with OOF sum/count and resume (loop.py), and folds trained side by side in worker processes
(workers.py)."""
