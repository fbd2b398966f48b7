dofile(os.getenv("WRK_DIR") .. "/ids.lua")
function request()
  local _, name = pick()
  return wrk.format("GET", wrk.path .. "/Users?filter=userName%20eq%20%22" .. name .. "%22")
end
