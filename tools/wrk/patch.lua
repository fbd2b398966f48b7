-- PATCH /Users/{id}: every request changes the family name, so every one is a store write.
dofile(os.getenv("WRK_DIR") .. "/ids.lua")
function request()
  local id = pick()
  local body = string.format(
    '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace",' ..
    '"path":"name.familyName","value":"Load%d"}]}', turn)
  return wrk.format("PATCH", wrk.path .. "/Users/" .. id, nil, body)
end
