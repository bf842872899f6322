"""Images into a registry over its HTTP API: one pipeline, any source, a target.

    source.py         the Source protocol: what the pipeline asks of where images come from
    engine_source.py  this machine's Docker engine (`docker save` read as a stream: dockersave.py,
                      dockerengine.py for the socket)
    bundle_source.py  a bundle file (nodecfg/bundle/), read in place, upstream digests kept
    pipeline.py       facts (tags, blobs) -> pure plan (mount / upload) -> apply, tags last
    api.py            the registry's HTTP API (distribution v2) and the `Target` pushed to
    channels.py       how HTTP reaches the registry: SSH channels to the master, or --direct TCP
                      (channel_tls.py: TLS verified inside an SSH channel)

A new image source (an OCI layout directory, say) is one module beside the two sources.
"""
