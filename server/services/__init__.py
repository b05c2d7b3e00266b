"""Domain rules of the county server. Services know no HTTP: they take plain values, call the
storage layer inside one transaction per action, audit admin actions and raise ``server.errors``.
"""
