"""The local web page of app.py: restore images with any model in a browser.

catalogue.py  the models the page offers (config list + the user's ckpt= / weights= / prior_ckpt=)
uploads.py    uploaded files -> arrays and tensors, with a message a person can act on when they are bad
session.py    one image + options -> the restored image and its numbers (no Gradio: unit-tested alone)
run.py        one press of Restore: uploads + options -> restored PNGs and the numbers' table
worker.py     page or API values -> options, a run, the expected time; runs take turns on the device
estimate.py   the expected time of a run from a timed NFE per model
demo_images.py  the bundled demo inputs (scikit-image photos, degraded here; nothing is downloaded)
page.py       the Gradio layout and its event handlers
api.py        the page's one API endpoint, /restore (gradio_client)
browser.py    app.py in headless Chromium, for the browser test and the screenshot script
"""

import os

# Gradio reports usage and checks its version online unless told not to; set before gradio is imported.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
