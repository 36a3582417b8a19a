"""The HTTP service around the captioner library: settings, routes, dynamic batcher and page."""
