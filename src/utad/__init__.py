"""utad: Unsupervised Two-stage Anomaly Detection (Liu, Zhuang, Lu).

Train on anomaly-free images only; IE-Net extracts an anomaly-free *impression* m, Expert-Net restores
high-fidelity details x^ (and a naive impression m^), and the Perceptual Measurement compares x, m, x^ and
m^ in VGG-19 feature space to give the anomaly map e.
"""

from utad.errors import UtadError

__version__ = "0.1.0"
__all__ = ["UtadError", "__version__"]
