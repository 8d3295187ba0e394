-- History listings (type and system level) read versions newest first and stop after one page,
-- instead of sorting every version of the region for each page.
CREATE INDEX resources_updated ON resources (last_updated);
CREATE INDEX resource_history_updated ON resource_history (last_updated);
