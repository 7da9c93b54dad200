"""The local web page of app.py: restore images with any model in a browser.

catalogue.py  the models the page offers (config list + the user's ckpt= / weights= / prior_ckpt=)
uploads.py    uploaded files -> arrays and tensors, with a message a person can act on when they are bad
session.py    one image + options -> the restored image and its numbers (no Gradio: unit-tested alone)
demo_images.py  the bundled demo inputs (scikit-image photos, degraded here; nothing is downloaded)
page.py       the Gradio layout and its event handlers
"""

import os

# Gradio reports usage and checks its version online unless told not to; set before gradio is imported.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
