"""The paper's Table 1: one-class AUC of MemAE, its ablations, OC-SVM and KDE on images."""
