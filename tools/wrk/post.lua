-- POST /Users, every request a new user (names unique per run and wrk thread).
local counter = 0
local run = os.getenv("WRK_RUN") or tostring(os.time())
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
function request()
  counter = counter + 1
  local name = string.format("wrk.%s.%d.%d@bench.example.com", run, thread_id, counter)
  local body = string.format(
    '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s","active":true,' ..
    '"name":{"givenName":"Tp","familyName":"Load"},"emails":[{"type":"work","primary":true,"value":"%s"}]}',
    name, name)
  return wrk.format("POST", wrk.path .. "/Users", nil, body)
end
