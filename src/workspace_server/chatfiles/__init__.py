"""Chat attachments (spec 04 §4): upload into and download from a workspace's file system."""
