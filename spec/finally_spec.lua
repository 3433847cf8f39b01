--- spec/busted_helper.lua: every `finally` a test registers runs (busted
-- alone keeps only the last), the last registered first.
local ran = {}

describe("finally in a spec", function()
  it("may be registered more than once", function()
    finally(function() ran[#ran + 1] = "first" end)
    finally(function() ran[#ran + 1] = "second" end)
  end)

  it("ran every cleanup of the test before, the last registered first", function()
    assert.are.same({ "second", "first" }, ran)
  end)
end)
