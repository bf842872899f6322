"""Image bundles: the images an offline site needs, in one file, with every upstream digest kept.

`create.create_bundle` fetches images over the registry HTTP API (`client.RegistryClient`) into an
OCI image layout inside one tar (`layout`); `reader.Bundle` reads such a file in place;
`inspect` lists and verifies it. `sources` resolves where each upstream host is fetched from,
`manifests` is the pure part about manifests, indexes and platforms.
"""
