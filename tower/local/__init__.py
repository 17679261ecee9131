"""The local Durable host: runs the app's own functions the way the Functions host and the Durable
extension would, with state in SQLite. The only part of the library that imports the Functions SDKs.
"""
