dofile(os.getenv("WRK_DIR") .. "/ids.lua")
function request()
  local id = pick()
  return wrk.format("GET", wrk.path .. "/Users/" .. id)
end
