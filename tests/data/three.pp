<!DOCTYPE PickedPoints>
<PickedPoints>
 <DocumentData>
  <DateTime time="12:00:00" date="2024-01-01"/>
  <User name="someone"/>
  <DataFileName name="scan.ply"/>
  <templateName name=""/>
 </DocumentData>
 <point x="-3.5" y="12.25" z="80" active="1" name="nose_tip"/>
 <point x="30.125" y="40" z="55.5" active="0" name="eye_l"/>
 <point x="-30.125" y="40" z="55.5" active="1" name="eye_r"/>
</PickedPoints>
