"""Model registry: every trained model is a version; a candidate is promoted only if it beats the champion."""
