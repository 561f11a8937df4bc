"""Ray Serve application for batch video scoring with RwR."""
